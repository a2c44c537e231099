"""The interactive terminal UI (Textual)."""

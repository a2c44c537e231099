from kepler_top.cli import main

raise SystemExit(main())

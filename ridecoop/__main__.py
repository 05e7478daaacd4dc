from ridecoop.cli import main

raise SystemExit(main())

from hookstream.cli import main

raise SystemExit(main())

from runner.entry import main

raise SystemExit(main())

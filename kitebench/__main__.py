from kitebench import main

raise SystemExit(main())

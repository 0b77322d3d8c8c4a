from wakeword_dist.cli import exit_with, main

exit_with(main())

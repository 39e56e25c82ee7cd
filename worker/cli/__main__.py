from worker.cli.admin import main

main()

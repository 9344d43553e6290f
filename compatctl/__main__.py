from compatctl.cli import main

main()

from wattwise.cli import main

main()

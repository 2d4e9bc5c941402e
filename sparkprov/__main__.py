from sparkprov.cli import main

main()

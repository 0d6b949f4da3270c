from wshub.cli.main import main

main()

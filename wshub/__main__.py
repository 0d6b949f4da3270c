from wshub.cli import main

main()

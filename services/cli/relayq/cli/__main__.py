from relayq.cli.main import main

main()

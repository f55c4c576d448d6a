from relayq.api.main import main

main()

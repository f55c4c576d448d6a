from relayq.recovery.main import main

main()

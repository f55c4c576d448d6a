from relayq.worker.main import main

main()

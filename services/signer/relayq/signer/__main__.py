from relayq.signer.service import main

main()

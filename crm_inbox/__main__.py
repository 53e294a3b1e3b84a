from crm_inbox.cli import main

main()

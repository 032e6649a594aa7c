"""The human side of the call center: accounts, queues and the ACD, the operator desk."""

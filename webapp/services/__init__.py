"""The service layer: business rules and transactions, shared by the API and the workers."""

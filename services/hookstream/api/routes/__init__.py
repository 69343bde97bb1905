"""The API's route tables, one module per resource."""

"""Customer endpoints, shared by the API and the sender.

Where a webhook may point (`destinations`) and how its signing secrets are kept at rest
(`secrets`). Core knows neither: it carries a webhook's URL and stored secrets as
the record holds them.
"""

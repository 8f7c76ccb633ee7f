"""The API's routers by resource; `api.app.create_app` includes them in order."""

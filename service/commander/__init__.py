"""The commander's side of the service: operator accounts and sessions, the dashboard's data and charts."""

"""Services: use cases built only on the domain and the ports."""

"""Serving: the recommender behind the CLI and both servers, its pyfunc, batch recommendations."""

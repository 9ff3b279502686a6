"""Load tests: locust scenarios, the bounded headless runner behind `make loadtest`, and its report."""

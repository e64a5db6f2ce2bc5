"""Performance per watt: the work API, the scraper of jobs' own counters, the client."""

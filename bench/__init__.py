"""`python -m bench` (make bench): authsvc side by side with another checkout, under wrk."""

"""wait-times: average wait per (tenant, drink) for Serverlesspresso."""

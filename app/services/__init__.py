"""Use cases. Services never commit: the request's or the job's unit of work does."""

"""Process entry points: the Dramatiq broker and middleware, the worker, the clock, the autoscaler."""

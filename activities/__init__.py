"""Activities of the registration workflow, grouped by role, and the providers behind each role."""

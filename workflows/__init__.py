"""The registration workflow and its contract."""

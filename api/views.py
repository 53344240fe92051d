"""The job as clients see it: the views live in the core (`thumbify.views`), as webhooks deliver them too."""

from thumbify.views import JobPage, JobView, job_view

__all__ = ["JobPage", "JobView", "job_view"]

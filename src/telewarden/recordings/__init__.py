"""The offline adapter: recorded flows and HAR files judged by `telewarden check` and in pytest."""

"""AWS, loaded only when a window uses it: S3 archives and RDS snapshots."""

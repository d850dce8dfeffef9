"""Where lines come from: an export's revision files (a folder or S3), read and cut into lines."""

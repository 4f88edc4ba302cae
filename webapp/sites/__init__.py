"""Sites where records are collected."""

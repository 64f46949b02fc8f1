"""Deployment helpers: the broker ACL generated from the topic registry, and credentials."""

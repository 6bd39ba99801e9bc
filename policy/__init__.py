"""Pulumi policy pack: IAM, credential and Pub/Sub rules for any stack.

Run it with `pulumi preview --policy-pack policy` from the repository root.
"""

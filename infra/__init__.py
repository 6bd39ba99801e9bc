"""Pulumi program that deploys the Pub/Sub to Mixpanel pipeline on Google Cloud.

`config` validates the stack configuration, `stack.build_stack` registers the
resources, and each other module contains one component of the pipeline.
"""

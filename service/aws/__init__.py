"""The AWS adapters: SQS queue, DynamoDB store, EventBridge publisher, provisioning, clients.

They implement the ports of ``service.ports`` and translate botocore's errors into the
service's own (``service.aws.errors``) once, so nothing above this package sees botocore.
"""

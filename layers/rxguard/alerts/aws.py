"""The AWS notification sink: SNS topics for alerts and letter announcements, the
results bucket for letters and for the "sent" markers that make publishing idempotent.

The only module of the alerts and letters packages that talks to AWS.

Two ways to publish:

- `deliver(entry)`, the outbox's way (Notify, the sweeper, the API): the message was recorded
  in the outbox (DynamoDB) first, is published with its deterministic `message_id` as a
  message attribute (subscribers drop a repeat by it), and the outbox marks it sent only
  after SNS acknowledged it. At least once: a process killed between SNS's answer and the
  mark publishes it again, never loses it. Throttling and 5xx raise TransientError.
- `publish_alert` / `publish_letter` (the scheduled digests): a marker per message, below.

Markers, as far as SNS standard topics allow: before publishing message M the sink
creates `notifications/sent/<M.message_id>` with a conditional put (`If-None-Match: *`).
If the marker exists, M was published by an earlier attempt and is skipped. If the
publish fails, the marker is deleted again so a retry publishes M. A process killed
between the put and the publish loses M (at-most-once), which we prefer to duplicates;
the finding itself stays in the findings table and in the batch report.
"""

from __future__ import annotations

import logging
from typing import Any

from rxguard.alerts.messages import sns_publish_arguments
from rxguard.alerts.outbox import OutboxEntry
from rxguard.alerts.schema import AlertMessage
from rxguard.alerts.sink import NotificationSink
from rxguard.errors import TransientError

logger = logging.getLogger(__name__)

MARKER_PREFIX = "notifications/sent/"
_RETRYABLE = {"Throttling", "ThrottlingException", "ThrottledException", "KMSThrottlingException", "InternalError"}


class AwsNotificationSink(NotificationSink):
    def __init__(
        self,
        sns: Any,
        s3: Any,
        alerts_topic_arn: str,
        letters_topic_arn: str,
        results_bucket: str,
    ) -> None:
        self.sns = sns
        self.s3 = s3
        self.alerts_topic_arn = alerts_topic_arn
        self.letters_topic_arn = letters_topic_arn
        self.results_bucket = results_bucket

    def publish_alert(self, message: AlertMessage) -> bool:
        return self._publish_once(self.alerts_topic_arn, message)

    def publish_letter(self, message: AlertMessage) -> bool:
        return self._publish_once(self.letters_topic_arn, message)

    def deliver(self, entry: OutboxEntry) -> None:
        """Publish an outbox entry on its topic; raises unless SNS acknowledged it."""
        message = entry.message
        topic_arn = self.letters_topic_arn if entry.topic == "letters" else self.alerts_topic_arn
        attributes = {
            **message.sns_attributes(),
            "message_id": {"DataType": "String", "StringValue": message.message_id},  # subscribers dedupe by it
        }
        try:
            self.sns.publish(TopicArn=topic_arn, MessageAttributes=attributes, **sns_publish_arguments(message))
        except Exception as exc:  # botocore ClientError; business code never imports botocore
            response = getattr(exc, "response", None) or {}
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _RETRYABLE or status >= 500:
                raise TransientError(f"SNS publish {message.message_id}: {code or status}") from exc
            raise

    def put_letter(self, key: str, body: bytes, content_type: str) -> str:
        self.s3.put_object(Bucket=self.results_bucket, Key=key, Body=body, ContentType=content_type)
        return self.letter_uri(key)

    def letter_uri(self, key: str) -> str:
        return f"s3://{self.results_bucket}/{key}"

    def was_published(self, message_id: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.results_bucket, Key=MARKER_PREFIX + message_id)
        except Exception as exc:  # botocore ClientError 404: not published yet
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _publish_once(self, topic_arn: str, message: AlertMessage) -> bool:
        marker = MARKER_PREFIX + message.message_id
        if not self._claim(marker, topic_arn):
            logger.info("already published, skipped", extra={"message_id": message.message_id})
            return False
        try:
            self.sns.publish(  # JSON for queues and functions, Chinese text for email and SMS
                TopicArn=topic_arn,
                MessageAttributes=message.sns_attributes(),
                **sns_publish_arguments(message),
            )
        except Exception:
            self.s3.delete_object(Bucket=self.results_bucket, Key=marker)
            raise
        return True

    def _claim(self, key: str, topic_arn: str) -> bool:
        try:
            self.s3.put_object(Bucket=self.results_bucket, Key=key, Body=topic_arn.encode("utf-8"), IfNoneMatch="*")
        except Exception as exc:  # botocore ClientError; business code never imports botocore
            error = getattr(exc, "response", {}).get("Error", {})
            if error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                return False
            raise
        return True

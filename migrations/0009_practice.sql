-- Issue 20, practice runs: a session created with "mode": "practice" runs like any other, but
-- nothing about it counts: it is left out of listings, attempt limits, the review queue, webhooks
-- and signed verdicts, keeps no evidence, and its outcome is only summarised per subject.
-- 0 = a real verification, 1 = practice.
ALTER TABLE sessions ADD COLUMN practice BIGINT NOT NULL DEFAULT 0;

-- Issue 20, re-verification against the enrolled face: a subject's face template (the mean of
-- the live embeddings of a call that passed with "enrol": true), never an image. One per subject
-- and API key; replaced by the next enrolling pass; deleted with the subject and when expired.
CREATE TABLE enrolments (
    api_key_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- Little-endian f32s, hex.
    embedding TEXT NOT NULL,
    session_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, subject)
);

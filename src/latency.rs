//! The latency histograms the server records through the `metrics` facade (rendered by
//! `crate::metrics` with Prometheus buckets). A leaf: the shells that time something (the media
//! thread, the notifier) name the histogram from here and import nothing else for it.

/// Decoding one video frame (every frame is decoded).
pub const DECODE_SECONDS: &str = "vericall_decode_seconds";
/// The call core's analysis of one analysed frame (capture checks, face tracking, liveness).
pub const ANALYSIS_SECONDS: &str = "vericall_analysis_seconds";
/// The ID-document step's work on one analysed frame: finding the card and, when it is ready,
/// reading it (the OCR).
pub(crate) const DOCUMENT_FRAME_SECONDS: &str = "vericall_document_frame_seconds";
/// A guidance hint from the capture of the frame that raised it to its publication.
pub const GUIDANCE_SECONDS: &str = "vericall_guidance_latency_seconds";
/// Recording a verdict: signing it and storing it with its webhook delivery.
pub const VERDICT_RECORD_SECONDS: &str = "vericall_verdict_record_seconds";
/// One webhook request, sent to answered (or failed).
pub(crate) const WEBHOOK_SECONDS: &str = "vericall_webhook_request_seconds";

/// Bucket bounds (seconds) shared by every latency histogram: 1 ms to 10 s.
pub(crate) const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every histogram with its help text.
pub const ALL: &[(&str, &str)] = &[
    (DECODE_SECONDS, "Decoding one video frame."),
    (
        ANALYSIS_SECONDS,
        "Analysis of one analysed frame (capture checks, face, liveness).",
    ),
    (
        DOCUMENT_FRAME_SECONDS,
        "The ID-document step's work on one analysed frame, the card's reading (OCR) included.",
    ),
    (
        GUIDANCE_SECONDS,
        "A guidance hint from the capture of its frame to its publication.",
    ),
    (
        VERDICT_RECORD_SECONDS,
        "Signing and storing a verdict with its webhook delivery.",
    ),
    (WEBHOOK_SECONDS, "One webhook request."),
];

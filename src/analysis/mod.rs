//! Analysis of decoded media: capture quality, camera and microphone health. Everything here is
//! sans-IO: fed with frames, PCM levels and timestamps, it returns what changed.

pub mod device;
pub mod effort;
pub mod face;
pub mod hold;
pub mod image;
pub mod provenance;
pub mod quality;
pub mod voice;

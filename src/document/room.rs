//! What the room shows before the card is asked for. Picture frames, windows, books, a screen or
//! a door behind the person have a card's straight edges and right angles; found in the frames
//! before the "show your ID" step, they are remembered, and the step then judges only a card that
//! appears or moves after it starts. Without this the step gave hints about a picture frame
//! 75 ms after it began and, with no card at all, gave up with `DOCUMENT_CUT_OFF`.
//!
//! Sans-IO: the caller samples frames before the step (at most every
//! [`ROOM_SAMPLE_INTERVAL`]) and every card-like quad not yet known is remembered.

use std::time::{Duration, Instant};

use super::card::{card_like_quads, same_object, CardQuad, CardScratch};
use crate::analysis::quality::I420;

/// How often a frame is searched for room objects before the step (the search costs a few ms).
pub(crate) const ROOM_SAMPLE_INTERVAL: Duration = Duration::from_millis(400);
/// Room objects remembered at most (the oldest is forgotten first).
pub(crate) const ROOM_OBJECTS_MAX: usize = 64;

#[derive(Debug, Default)]
pub struct RoomMemory {
    objects: Vec<CardQuad>,
    next_sample: Option<Instant>,
}

impl RoomMemory {
    /// Objects remembered so far.
    pub fn objects(&self) -> &[CardQuad] {
        &self.objects
    }

    /// A frame before the step, at `at`: when a sample is due, remembers every card-like quad in
    /// it that is not already known. Returns how many new objects were learnt.
    pub fn observe(&mut self, frame: &I420, at: Instant, scratch: &mut CardScratch) -> usize {
        if self.next_sample.is_some_and(|t| at < t) {
            return 0;
        }
        self.next_sample = Some(at + ROOM_SAMPLE_INTERVAL);
        let before = self.objects.len();
        for quad in card_like_quads(frame, scratch, &self.objects) {
            self.remember(quad, frame.width);
        }
        self.objects.len().saturating_sub(before)
    }

    /// Adds `quad` unless it is already known.
    pub fn remember(&mut self, quad: CardQuad, frame_width: usize) {
        if self
            .objects
            .iter()
            .any(|o| same_object(o, &quad, frame_width))
        {
            return;
        }
        if self.objects.len() >= ROOM_OBJECTS_MAX {
            self.objects.remove(0);
        }
        self.objects.push(quad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quad(x: f32, y: f32) -> CardQuad {
        CardQuad {
            corners: [
                (x, y),
                (x + 160.0, y),
                (x + 160.0, y + 100.0),
                (x, y + 100.0),
            ],
            cut_off: false,
            support: 1.0,
        }
    }

    #[test]
    fn remembers_each_object_once_and_forgets_the_oldest() {
        let mut room = RoomMemory::default();
        room.remember(quad(10.0, 10.0), 640);
        // The same frame on the wall, read a few pixels off: still one object.
        room.remember(quad(14.0, 12.0), 640);
        assert_eq!(room.objects().len(), 1);
        room.remember(quad(300.0, 10.0), 640);
        assert_eq!(room.objects().len(), 2);
        for i in 0..ROOM_OBJECTS_MAX {
            room.remember(quad(5.0 + 30.0 * i as f32, 300.0), 640);
        }
        assert_eq!(room.objects().len(), ROOM_OBJECTS_MAX);
        assert!(!room
            .objects()
            .iter()
            .any(|o| same_object(o, &quad(10.0, 10.0), 640)));
    }

    #[test]
    fn a_card_that_moved_is_not_the_room() {
        assert!(same_object(&quad(100.0, 100.0), &quad(110.0, 105.0), 640));
        assert!(!same_object(&quad(100.0, 100.0), &quad(140.0, 100.0), 640));
    }

    #[test]
    fn a_pane_of_a_known_window_is_the_room_and_a_card_in_front_is_not() {
        use crate::document::card::part_of;
        let window = quad(490.0, 16.0);
        let pane = CardQuad {
            corners: [(490.0, 1.0), (560.0, 1.0), (560.0, 110.0), (490.0, 110.0)],
            cut_off: true,
            support: 1.0,
        };
        assert!(part_of(&pane, &window, 640));
        let card = CardQuad {
            corners: [
                (120.0, 150.0),
                (520.0, 150.0),
                (520.0, 400.0),
                (120.0, 400.0),
            ],
            cut_off: false,
            support: 1.0,
        };
        assert!(!part_of(&card, &window, 640));
    }
}

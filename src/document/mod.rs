//! ID documents shown during the call (issue 8). So far: the number checks a read document must
//! pass (GB 11643 resident ID numbers, ICAO 9303 passport MRZ lines).

pub mod checks;

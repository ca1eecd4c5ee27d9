-- edge::write, a transaction's end: the commit, then the events' steps (write/publish).
COMMIT;
\include write/publish

"""`bioray bench`: speed (and, later, quality) measured against the strongest honest baseline in the
same run. Never asserted in tests."""

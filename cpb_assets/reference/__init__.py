"""Reference assets: tables from outside the sources that harmonization looks things up in."""

"""The demo package: the SYNTHETIC demo world and one writer per source.

``world`` holds the planted truth; each ``<source>.py`` writes that source's
files in the real layout the source ships, so that the demo exercises the
real readers. Nothing here is read by production code paths except through
the demo profile.
"""

"""tunesmith.studio"""

"""tunesmith.engine"""
